from collect.main import main

raise SystemExit(main())
