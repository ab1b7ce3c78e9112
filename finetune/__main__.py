from finetune.main import main

raise SystemExit(main())
