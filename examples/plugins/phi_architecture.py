"""Example third-party plugin: an architecture family fairgptq does not ship (Microsoft's Phi).

One file outside the fairgptq package is all a new model family needs: where its decoder layers
are, which linear plays which role (in forward order), and how its modules store their weights.
Use it from a pipeline with

    plugins: [phi_architecture]           # the module must be importable (PYTHONPATH)
    model: {name: path/to/a/phi/model}

or from Python by registering the module (``default_registry().register_module("phi_architecture")``)
before ``quantize_model``; or package it with an entry point in its own pyproject.toml:

    [project.entry-points."fairgptq.architectures"]
    phi = "phi_architecture"

Phi runs attention and MLP in parallel on the same normalised input; the roles below are still
in forward order (q/k/v, dense, fc1, fc2), which is all the true-sequential driver needs.
"""
from __future__ import annotations

from fairgptq.contract import ArchSpec, hookimpl

PHI = ArchSpec(
    layers="model.layers",
    roles={
        "attn_qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        "attn_out": ("self_attn.dense",),
        "mlp_in": ("mlp.fc1",),
        "mlp_out": ("mlp.fc2",),
    },
    transposed=False,  # nn.Linear: (out, in), as the engine works
    tree_attention=False,  # the evaluation's shared-prefix packing is not checked for this family
)


@hookimpl
def fairgptq_architectures() -> dict[str, ArchSpec]:
    return {"phi": PHI}
