"""The PyTorch side: the twin (torch only, no JAX), the weight conversion between the two
frameworks, and the parity check that runs both."""
