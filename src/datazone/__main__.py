from datazone.command import main

main()
