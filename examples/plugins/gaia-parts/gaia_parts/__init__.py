"""gaia-parts: parts built like make, reused one by one as checkpoint units."""
