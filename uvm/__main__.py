import sys

from uvm.cli.main import main

sys.exit(main())
