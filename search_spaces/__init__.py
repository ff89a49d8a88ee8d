"""Search-space files shipped with glintru (installed as the package ``glintru.search_spaces``)."""
