"""Built-in uplinks: how a branch reaches the VIP service centre."""
