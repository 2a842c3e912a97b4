from datazone.cli import main

main()
