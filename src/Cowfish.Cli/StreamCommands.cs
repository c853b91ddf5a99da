using Cowfish.Files;
using Cowfish.Streams;

namespace Cowfish.Cli;

/// <summary><c>send</c> and <c>receive</c>: read-only snapshots as full or incremental streams, to and from files or pipes.</summary>
internal static class StreamCommands
{
    public static readonly Command[] All =
    [
        new("send", "send POOL SNAPSHOT [--parent SNAPSHOT] [-o FILE] [--resume TOKEN]",
            "Write a read-only snapshot as a stream (stdout unless -o); with --parent, only the changes since it.", Send,
            Options: ["--parent", "-o", "--resume"], Details: SendHelp),
        new("receive", "receive POOL [-i FILE] [--name NAME] | --token POOL | --abort POOL",
            "Apply a stream (stdin unless -i) as a new read-only snapshot, atomically; resume or abort an interrupted one.", Receive,
            Flags: ["--token", "--abort"], Options: ["-i", "--name"], Details: ReceiveHelp),
    ];

    private const string SendHelp = """

        The stream goes to stdout (never a terminal) or to FILE. SNAPSHOT and the parent must be
        read-only snapshots; an incremental stream holds only what changed since the parent, and
        data shared by clones goes as clone records. --resume TOKEN (printed by 'cowfish receive
        --token' on the receiving pool) continues an interrupted stream where the receiver stopped.

        """;

    private const string ReceiveHelp = """

        The stream is read from stdin or FILE and becomes a read-only snapshot named as on the
        sender (or NAME) once its end record has been verified; until then nothing is visible.
        An interrupted or damaged stream leaves a hidden partial receive behind:
          cowfish receive --token POOL    print the token to resume from (exit 3 if none)
          cowfish receive --abort POOL    remove it and give its space back (exit 3 if none)

        """;

    private static int Send(Args a, Io io)
    {
        a.Expect(2, "POOL SNAPSHOT");
        string? file = a.Option("-o") is { } o ? io.HostPath(o) : null;
        Stream output;
        if (file is null)
        {
            output = io.BinaryOut ?? throw new UsageException("there is no binary standard output here; use -o FILE");
            if (io.OutIsTerminal)
                throw new UsageException("refusing to write a binary stream to a terminal; redirect stdout or use -o FILE");
        }
        else output = new FileStream(file, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        var progress = new Progress(io, "send", 0);
        bool ok = false;
        try
        {
            var r = SendStream.Write(fs, a.Positional[1], a.Option("--parent"), output,
                new SendOptions { ResumeToken = a.Option("--resume"), Progress = progress.Report });
            output.Flush();
            ok = true;
            progress.Done();
            io.Err.WriteLine($"sent {a.Positional[1]}{(r.Incremental ? $" (changes since {a.Option("--parent")})" : "")}: "
                + $"{r.BytesWritten} bytes, {r.Records} records, {r.DataBytes} bytes of data, {r.ClonedBytes} bytes as clones");
            return ExitCodes.Ok;
        }
        finally
        {
            progress.Done();
            if (file is not null)
            {
                output.Dispose();
                if (!ok) TryDelete(file);
            }
        }
    }

    private static void TryDelete(string file)
    {
        try { File.Delete(file); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private static int Receive(Args a, Io io)
    {
        a.Expect(1, "POOL");
        if (a.Has("--token") && a.Has("--abort")) throw new UsageException("--token and --abort do not go together");
        using var fs = io.Pools.OpenFiles(a.Positional[0]);
        if (a.Has("--token"))
        {
            var p = ReceiveStream.Pending(fs) ?? throw new NotFoundException("no interrupted receive on this pool");
            io.Out.WriteLine(p.ResumeToken);
            return ExitCodes.Ok;
        }
        if (a.Has("--abort"))
        {
            var p = ReceiveStream.Pending(fs);
            if (!ReceiveStream.Abort(fs)) throw new NotFoundException("no interrupted receive on this pool");
            io.Out.WriteLine($"aborted the receive of {p?.Name}");
            return ExitCodes.Ok;
        }
        string? file = a.Option("-i") is { } i ? io.HostPath(i) : null;
        if (file is not null && !File.Exists(file)) throw new NotFoundException($"{file}: no such file");
        using var opened = file is null ? null : new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        var input = opened ?? io.In ?? throw new UsageException("there is no standard input to read; use -i FILE");
        var progress = new Progress(io, "receive", file is null ? 0 : input.Length);
        try
        {
            var r = ReceiveStream.Apply(fs, input, new ReceiveOptions { Name = a.Option("--name"), Progress = progress.Report });
            progress.Done();
            io.Out.WriteLine($"received {r.Name}{(r.Parent is { } parent ? $" (incremental from {parent})" : "")}{(r.Resumed ? ", resumed" : "")}: {r.BytesRead} bytes");
            return ExitCodes.Ok;
        }
        catch (CowfishException)
        {
            progress.Done();
            if (ReceiveStream.Pending(fs) is not null)
                io.Err.WriteLine($"cowfish receive: the partial receive is kept; resume with 'cowfish send --resume $(cowfish receive --token {a.Positional[0]}) ...' or remove it with 'cowfish receive --abort {a.Positional[0]}'");
            throw;
        }
    }
}
