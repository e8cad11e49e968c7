from wattbus.cli import main

raise SystemExit(main())
