using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Cowfish.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests.Nbd;

/// <summary>
/// A pool in a temp directory, served by <c>cowfish serve</c> running as a real child process (the
/// way users run it), on a Unix socket and on 127.0.0.1 with a port the server picks. Keeps the
/// server's stderr log, stops it with SIGTERM or kills it with SIGKILL, and never leaves it running.
/// </summary>
internal sealed partial class ServedPool : IDisposable
{
    private readonly ITestOutputHelper _output;
    // Guards _log: the server's stderr arrives on a thread-pool thread.
    private readonly StringBuilder _log = new();
    private Process? _server;
    private TaskCompletionSource<bool>? _ready;

    private ServedPool(ITestOutputHelper output, string dir)
    {
        _output = output;
        Dir = dir;
        PoolPath = Path.Combine(dir, "p.pool");
        Socket = Path.Combine(dir, "nbd.sock");
    }

    public string Dir { get; }
    public string PoolPath { get; }
    public string Socket { get; }
    public int Port { get; private set; }
    public bool Running => _server is { HasExited: false };

    public string Log
    {
        get { lock (_log) return _log.ToString(); }
    }

    /// <summary>Where the server's dll is: next to the tests, since the test project references the CLI.</summary>
    public static string CliDll => typeof(Cowfish.Cli.Cli).Assembly.Location;

    /// <summary>The dotnet host that runs the tests (the SDK sets DOTNET_HOST_PATH), else the one on PATH.</summary>
    public static string DotnetHost => Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h ? h : "dotnet";

    /// <summary>A fresh pool with the given volumes (made in-process through the CLI, as a user would).</summary>
    public static ServedPool Create(ITestOutputHelper output, params string[] volumes)
    {
        var p = new ServedPool(output, Directory.CreateTempSubdirectory("cowfish-nbd-").FullName);
        Cli("mkfs", p.PoolPath);
        foreach (var v in volumes) Cli("volume", "create", p.PoolPath, v);
        return p;
    }

    /// <summary>Runs a cowfish verb in-process and insists that it succeeds.</summary>
    public static string Cli(params string[] args)
    {
        var r = CliHarness.Run(args);
        Assert.True(r.Code == 0, $"cowfish {string.Join(' ', args)} exited {r.Code}: {r.Out}{r.Err}");
        return r.Out;
    }

    public string UnixUri(string export) => $"nbd+unix:///{export}?socket={Socket}";
    public string TcpUri(string export) => $"nbd://127.0.0.1:{Port}/{export}";

    /// <summary>Starts <c>cowfish serve POOL --socket S --listen 127.0.0.1:0 EXTRA...</c> and waits until it listens.</summary>
    public async Task StartAsync(params string[] extra)
    {
        Assert.False(Running, "the server is already running");
        var psi = new ProcessStartInfo(DotnetHost)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = Dir,
        };
        foreach (var a in new[] { CliDll, "serve", PoolPath, "--socket", Socket, "--listen", "127.0.0.1:0" }.Concat(extra))
            psi.ArgumentList.Add(a);
        var ready = _ready = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (_log) _log.AppendLine(e.Data);
            if (ListeningOn().Match(e.Data) is { Success: true } m) Port = int.Parse(m.Groups[1].Value);
            // The control socket line comes after every listener is up.
            if (e.Data.Contains("cowfish serve: control socket")) ready.TrySetResult(true);
        };
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not null) lock (_log) _log.AppendLine("stdout: " + e.Data);
        };
        p.Exited += (_, _) => ready.TrySetResult(false);
        Assert.True(p.Start());
        _server = p;
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        var done = await Task.WhenAny(ready.Task, Task.Delay(TimeSpan.FromSeconds(30)));
        Assert.True(done == ready.Task && await ready.Task && Port > 0, $"cowfish serve did not come up:\n{Log}");
        Assert.True(File.Exists(Socket), $"no socket at {Socket}:\n{Log}");
    }

    [GeneratedRegex(@"listening on 127\.0\.0\.1:(\d+)")]
    private static partial Regex ListeningOn();

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SysKill(int pid, int signal);

    private const int SIGKILL = 9;
    private const int SIGTERM = 15;

    /// <summary>SIGTERM, as an init system would stop it: the server must drain, flush and exit 0.</summary>
    public async Task StopAsync()
    {
        var p = _server ?? throw new InvalidOperationException("not running");
        Assert.Equal(0, SysKill(p.Id, SIGTERM));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await p.WaitForExitAsync(cts.Token);
        p.WaitForExit(); // lets the stderr reader finish (no further wait: the process has exited)
        _server = null;
        Assert.True(p.ExitCode == 0, $"cowfish serve exited {p.ExitCode} on SIGTERM:\n{Log}");
        Assert.Contains("every acknowledged write is durable", Log);
        p.Dispose();
    }

    /// <summary>SIGKILL: no draining, no flushing; what survives is what the pool had made durable.</summary>
    public async Task KillAsync()
    {
        var p = _server ?? throw new InvalidOperationException("not running");
        Assert.Equal(0, SysKill(p.Id, SIGKILL));
        await p.WaitForExitAsync();
        _server = null;
        lock (_log) _log.AppendLine("--- test: server killed with SIGKILL");
        p.Dispose();
    }

    /// <summary>The oracle that ends every test that changes the pool: check must find nothing.</summary>
    public void AssertCheckClean()
    {
        Assert.False(Running, "stop the server before checking the pool");
        // With a server alive (a --stdio one a client started, say), check would be forwarded to it
        // instead of opening the pool itself; a server that stopped cleanly removed its socket.
        Assert.False(File.Exists(PoolPath + ".ctl"), "a server still holds the pool (its control socket exists)");
        var r = CliHarness.Run("check", PoolPath);
        Assert.True(r.Code == 0 && r.Out.StartsWith("clean:"), $"check failed (exit {r.Code}):\n{r.Out}{r.Err}");
    }

    /// <summary>Lines of the server log that contain <paramref name="text"/>.</summary>
    public string[] LogLines(string text) => Log.Split('\n').Where(l => l.Contains(text)).ToArray();

    public void Dispose()
    {
        if (_server is { } p)
        {
            try
            {
                if (!p.HasExited) p.Kill();
                p.WaitForExit(5000);
            }
            catch (InvalidOperationException) { }
            p.Dispose();
        }
        try { _output.WriteLine("--- cowfish serve log\n" + Log); }
        catch (InvalidOperationException) { } // no test is running any more
        try { Directory.Delete(Dir, recursive: true); }
        catch (IOException) { }
    }
}
