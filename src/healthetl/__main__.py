from healthetl.cli import main

main()
