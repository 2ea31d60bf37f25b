from flashmm.cli import main

main()
