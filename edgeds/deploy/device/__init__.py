"""What runs on the device: the release store and the deploy steps the host invokes over SSH."""
