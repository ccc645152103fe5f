"""CLI sub-commands; see adpq_onnx/cli.py for the convention."""
