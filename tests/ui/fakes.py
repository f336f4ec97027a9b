"""A fake predictor for UI tests: the real Predictor over the tiny hierarchy with a
fixed encoder, so handlers and figures run in milliseconds."""

import torch

from hierloc.infer.predictor import Engine, Predictor
from hierloc.model.geometry import Geometry
from tests.model.helpers import tiny_places


def fake_predictor(untrained: bool = False) -> Predictor:
    table = tiny_places()
    geom = Geometry("lorentz", 1.0)
    g = torch.Generator().manual_seed(0)
    starts = [table.level_slice(lv).start for lv in range(4)]
    points = []
    for lv in range(4):
        sl = table.level_slice(lv)
        t = torch.tensor([[table.lat_deg[r] / 30, table.lon_deg[r] / 60] for r in range(sl.start, sl.stop)])
        t = torch.cat([t, 0.1 * torch.randn(len(t), 6, generator=g)], 1) * (0.5 + 0.5 * lv)
        points.append(geom.to_point(t))
    city0 = points[3][0]

    def encode(images):
        return city0[None].expand(len(images), -1).clone()

    del starts
    return Predictor(Engine("preview" if untrained else "trained", "fake", untrained, table, geom, points, 0.5, encode))


def free_port() -> int:
    """A free TCP port on the loopback, for an app a test launches."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
