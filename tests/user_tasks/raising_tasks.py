"""User task code that fails, as user code does: the factory raises, or building a task does."""


def make_task(dim: int = 4):
    raise RuntimeError(f"cannot open my dataset for dim={dim}")


class BrokenFamily:
    """A TaskFamily whose configs sample fine but whose tasks cannot be built."""

    def sample(self, key):
        return {"dim": 3}

    def build(self, config):
        raise OSError("my_data.npz is missing")


def make_family():
    return BrokenFamily()
