namespace Cowfish.Tests.Support;

/// <summary>Runs the cowfish command in-process and captures what it prints.</summary>
internal static class CliHarness
{
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Cowfish.Cli.Cli.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }
}
