"""Loading the truncated model, the early-stopped capture, and the SAE encoders."""
