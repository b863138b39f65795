"""Branch profiles: YAML with line numbers, one composition rule, typed and frozen results."""

from .errors import ConfigError, ConfigWarning, ProfileError
from .types import Duration, Secret, SerialPort

__all__ = ["ConfigError", "ConfigWarning", "Duration", "ProfileError", "Secret", "SerialPort"]
