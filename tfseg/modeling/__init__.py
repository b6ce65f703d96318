"""Networks: generators, discriminators, mask networks and the small layers Keras lacks."""
