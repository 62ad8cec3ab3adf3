"""The compiler's passes, in order: load config -> lower to IR (lowering/) -> validate -> weight map ->
render (render*.py, with mixers/ and the tensor-parallel plan) -> format -> write; pipeline.py runs them."""
