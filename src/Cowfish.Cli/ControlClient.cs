using System.Net.Sockets;
using System.Text.Json;

namespace Cowfish.Cli;

/// <summary>
/// Sends a command line to the <c>cowfish serve</c> that holds the pool, relays its output, and
/// returns its exit code. Used when the pool's control socket exists and answers.
/// </summary>
internal static class ControlClient
{
    /// <summary>Runs <paramref name="argv"/> in the server of <paramref name="pool"/>; false if no server answers.</summary>
    public static bool TryForward(string pool, string[] argv, Io io, out int exitCode)
    {
        exitCode = 0;
        string path = ControlChannel.SocketPath(io.HostPath(pool));
        if (!File.Exists(path)) return false;
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try { socket.Connect(new UnixDomainSocketEndPoint(path)); }
        catch (SocketException)
        {
            socket.Dispose();
            return false; // a stale socket of a server that was killed: the pool is free
        }
        using var _ = socket;
        using var stream = new NetworkStream(socket, ownsSocket: false);
        var request = JsonSerializer.SerializeToUtf8Bytes(new { argv, cwd = io.Cwd ?? Environment.CurrentDirectory, progress = io.ShowProgress, out_terminal = io.OutIsTerminal }, Cli.Json);
        try
        {
            ControlChannel.Write(stream, ControlChannel.Request, request);
            var decoder = System.Text.Encoding.UTF8.GetDecoder();
            while (true)
            {
                var frame = ControlChannel.Read(stream);
                if (frame is null) break;
                var (type, payload) = frame.Value;
                switch (type)
                {
                    case ControlChannel.Stdout:
                        if (io.BinaryOut is { } bin)
                        {
                            io.Out.Flush();
                            bin.Write(payload);
                            bin.Flush();
                        }
                        else io.Out.Write(Decode(decoder, payload));
                        break;
                    case ControlChannel.Stderr:
                        io.Err.Write(System.Text.Encoding.UTF8.GetString(payload));
                        io.Err.Flush();
                        break;
                    case ControlChannel.StdinWanted:
                    {
                        int want = payload.Length == 4 ? Math.Clamp(BitConverter.ToInt32(payload), 1, 1 << 20) : 65536;
                        var buf = new byte[want];
                        int n = io.In?.Read(buf) ?? 0;
                        ControlChannel.Write(stream, ControlChannel.Stdin, buf.AsSpan(0, n));
                        break;
                    }
                    case ControlChannel.Exit:
                        exitCode = payload.Length == 4 ? BitConverter.ToInt32(payload) : ExitCodes.Error;
                        return true;
                }
            }
        }
        catch (Exception e) when (e is IOException or SocketException)
        {
            io.Err.WriteLine($"cowfish: lost the connection to the server holding {pool}: {e.Message}");
            exitCode = ExitCodes.Error;
            return true;
        }
        io.Err.WriteLine($"cowfish: the server holding {pool} closed the connection before the command finished");
        exitCode = ExitCodes.Error;
        return true;
    }

    private static string Decode(System.Text.Decoder d, byte[] payload)
    {
        var chars = new char[d.GetCharCount(payload, 0, payload.Length)];
        d.GetChars(payload, 0, payload.Length, chars, 0);
        return new string(chars);
    }
}
