"""What rollbot tells its operators about itself: structured logs and Prometheus metrics."""
