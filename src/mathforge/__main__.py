from mathforge.cli.main import main

main()
