"""Neural building blocks: Nes2Net back-ends, SSL layer aggregation, baselines."""
