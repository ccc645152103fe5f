from adpq_onnx.cli import main

raise SystemExit(main())
