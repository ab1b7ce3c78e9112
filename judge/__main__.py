from judge.main import main

raise SystemExit(main())
