"""The node's modules form no import circle (the layers contract in pyproject.toml orders
the layers; this also covers modules within one layer), and no part imports the
composition root."""

from __future__ import annotations

import grimp

GRAPH = grimp.build_graph("dynamo_node")


def test_no_import_circle() -> None:
    circles = []
    for module in sorted(GRAPH.modules):
        for imported in sorted(GRAPH.find_modules_directly_imported_by(module)):
            if not imported.startswith("dynamo_node"):
                continue
            back = GRAPH.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                circles.append((module, *back))
    assert circles == []


def test_only_programs_import_the_composition_root() -> None:
    importers = GRAPH.find_modules_that_directly_import("dynamo_node.node")
    assert importers <= {"dynamo_node.main"}, importers
