"""CDK constructs and stacks for a planned fleet: one construct per concern, a model is a parameter."""
