using Cowfish.Cli;

using var stdin = Console.OpenStandardInput();
using var stdout = Console.OpenStandardOutput();
return Cli.Run(args, new Io(Console.Out, Console.Error, stdin, stdout, ShowProgress: !Console.IsErrorRedirected,
    OutIsTerminal: !Console.IsOutputRedirected));
