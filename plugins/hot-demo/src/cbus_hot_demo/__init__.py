"""The hot-demo plugin: the Go hot-demo controller and a greeter."""
