from astuner.loop import main

raise SystemExit(main())
