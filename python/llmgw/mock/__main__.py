from llmgw.mock.runner import main

main()
