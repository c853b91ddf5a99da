using System.Diagnostics;
using System.Text;

namespace Cowfish.Tests.Nbd;

/// <summary>What an external program printed and how it exited.</summary>
internal sealed record ToolResult(string Command, int Code, string Out, string Err)
{
    /// <summary>Everything worth showing when an assertion about this run fails.</summary>
    public override string ToString() => $"$ {Command}\nexit {Code}\n--- stdout\n{Out}\n--- stderr\n{Err}";
}

/// <summary>Runs external programs (the real NBD clients) with a deadline, capturing their output.</summary>
internal static class Tool
{
    /// <summary>
    /// Runs <paramref name="file"/> to its end or kills it at <paramref name="timeout"/> (then the
    /// test fails: a client that hangs means a server that stopped answering).
    /// </summary>
    public static async Task<ToolResult> RunAsync(string file, IEnumerable<string> args, TimeSpan? timeout = null,
        byte[]? stdin = null, string? cwd = null, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = cwd ?? Environment.CurrentDirectory,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        string command = file + " " + string.Join(' ', psi.ArgumentList.Select(a => a.Contains(' ') ? $"'{a}'" : a));
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (stdin is not null) await p.StandardInput.BaseStream.WriteAsync(stdin);
        p.StandardInput.Close();
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(60));
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync();
            throw new TimeoutException($"{command} did not finish within {timeout ?? TimeSpan.FromSeconds(60)}\n{await stdout}\n{await stderr}");
        }
        return new ToolResult(command, p.ExitCode, await stdout, await stderr);
    }

    public static Task<ToolResult> RunAsync(string file, params string[] args) => RunAsync(file, args, null);

    /// <summary>libnbd's Python binding, run by the system interpreter (which is where apt installs it).</summary>
    public static Task<ToolResult> PythonAsync(string script, TimeSpan? timeout = null) =>
        RunAsync("/usr/bin/python3", ["-c", script], timeout);

    /// <summary>Blocks of <paramref name="path"/> actually allocated on the host, in bytes (what du counts).</summary>
    public static async Task<long> AllocatedBytesAsync(string path)
    {
        var r = await RunAsync("stat", "-c", "%b %B", path);
        var parts = r.Out.Trim().Split(' ');
        return long.Parse(parts[0]) * long.Parse(parts[1]);
    }

    public static string Hex(byte[] hash)
    {
        var sb = new StringBuilder(hash.Length * 2);
        foreach (byte b in hash) sb.Append(b.ToString("x2"));
        return sb.ToString();
    }
}
