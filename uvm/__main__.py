from uvm.cli.main import entry

entry()
