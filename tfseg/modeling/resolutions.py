"""The image sizes the networks accept: powers of two, since each block halves or doubles the size."""
import math


def power_of_two_log2(resolution, minimum, network):
    """log2(`resolution`), the number of halvings from it down to 1 px.

    Raises:
        ValueError: `resolution` is not a power of two, or is below `minimum` (the network's smallest
            size), naming `network` and the value.
    """
    if resolution >= minimum > 0:
        log = int(round(math.log2(resolution)))
        if 2**log == resolution:
            return log
    raise ValueError(f"{network} resolution must be a power of two >= {minimum}, got {resolution}")
