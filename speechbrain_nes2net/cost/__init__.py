"""Cost tools: parameters, MACs and CPU time of the back-ends and the SSL models (``nes2net-cost``)."""
