"""Built-in reader drivers."""
