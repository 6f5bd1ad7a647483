"""The README's property-test example, run as written (keeps the README true)."""
from hypothesis import given, settings
from hypothesis import strategies as st

import shardc
from shardc.testing import layouts, meshes

LAYER = open(__import__("pathlib").Path(__file__).parents[1] / "examples/tiny_ffn.model").read()
# tiny_ffn declares param win : f32[E, F] and param wout : f32[F, E]

@settings(max_examples=100, deadline=None)
@given(st.data())
def test_every_pin_of_the_weights_computes_the_same_numbers(data):
    mesh = data.draw(meshes(max_axes=3, max_size=2))
    sizes = shardc.parse(LAYER).sizes
    win, wout = (data.draw(layouts(dims, sizes, mesh)).format(mesh) for dims in ("EF", "FE"))
    text = LAYER.replace("[E, F]", f"[E, F] @ {win}").replace("[F, E]", f"[F, E] @ {wout}")
    g = shardc.parse(text, mesh=mesh)
    report = shardc.verify(shardc.shard(g, ffn="none"), dtype="f64", source=g)
    assert report.passed, report.first_mismatch
