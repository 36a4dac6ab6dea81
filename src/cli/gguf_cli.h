/* cli — `cleave import-gguf`: convert a llama.cpp GGUF file into a Hugging
 * Face model folder (see src/model/gguf_import.h). */
#ifndef CLV_GGUF_CLI_H
#define CLV_GGUF_CLI_H

/* Usage text of the command. */
extern const char *const clv_cli_import_gguf_help;

/* `cleave import-gguf FILE --out DIR [--dtype bf16|f16|f32] [--help]`.
 * argv[0] is the command name ("import-gguf"), so main calls it as
 * clv_cli_import_gguf(argc - 1, argv + 1); main's own argv (argv[1] ==
 * "import-gguf") is accepted too. Prints progress and errors to stderr,
 * returns the exit code (0 ok, 1 error, 2 usage); never exits. */
int clv_cli_import_gguf(int argc, char **argv);

#endif
