"""Stage 3: the web API and the viewer page (``lungseg serve``)."""
