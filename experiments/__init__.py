"""Research probes: why the GAN learns what it learns on the shapes data. Not the product (see README.md)."""
