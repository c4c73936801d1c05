"""Neo on Apache TVM: a registered version compiled per target into a signed bundle devices can pull.

source (version -> standard-op ONNX) -> build (TVM Relax, per target) -> parity (against ONNX Runtime) ->
bundle (manifest, hashes, Ed25519 signature) -> store (list, verify, publish to the distribution point).
"""
