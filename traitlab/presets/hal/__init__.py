"""The HAL preset (arXiv 2601.02813): its Turing and doctor scenarios and suites (``scenarios``)."""
