"""Built-in identity stores."""
