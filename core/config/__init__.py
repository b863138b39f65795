"""Branch profiles: YAML with line numbers, one composition rule, typed and frozen results."""

from .errors import ConfigError, ProfileError
from .types import Duration, Secret

__all__ = ["ConfigError", "Duration", "ProfileError", "Secret"]
