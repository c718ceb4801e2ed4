from glcleanup.cli import main

main()
