from teammates.cli import main

raise SystemExit(main())
