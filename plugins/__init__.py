"""Built-in plugins.  They load through the ``vipsense`` entry-point group like any vendor package."""
