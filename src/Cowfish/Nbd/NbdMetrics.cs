using System.Diagnostics.Metrics;
using static Cowfish.Nbd.NbdProtocol;

namespace Cowfish.Nbd;

/// <summary>
/// The server's instruments, on the engine's meter <c>Cowfish</c> (<see cref="Instruments"/>):
/// requests by type, bytes read and written, request latency, and the mapping-queue depth of every
/// pool being served. Recording a request allocates nothing: the tags are made once.
/// </summary>
internal static class NbdMetrics
{
    private static readonly Counter<long> Requests =
        Instruments.Meter.CreateCounter<long>("cowfish.nbd.requests", "{request}", "NBD requests answered by the workers, by type (tag type)");

    private static readonly Counter<long> BytesRead =
        Instruments.Meter.CreateCounter<long>("cowfish.nbd.read.bytes", "By", "Bytes returned by successful NBD reads");

    private static readonly Counter<long> BytesWritten =
        Instruments.Meter.CreateCounter<long>("cowfish.nbd.written.bytes", "By", "Bytes written by successful NBD writes");

    private static readonly Histogram<double> Latency =
        Instruments.Meter.CreateHistogram<double>("cowfish.nbd.request.duration", "ms",
            "NBD request latency, from its header read off the socket to its reply written, by type (tag type)");

    // Servers whose pools the mapping-queue gauge reports; guarded by itself.
    private static readonly List<NbdServer> Servers = new();

    private static readonly ObservableGauge<int> MappingQueue =
        Instruments.Meter.CreateObservableGauge("cowfish.mapping_queue.depth", ObserveMappingQueues, "{mapping}",
            "Write-back mappings queued or being applied, over every served pool (writers wait past 2048 a pool)");

    // One tag per command, made once, so that recording boxes and allocates nothing.
    private static readonly KeyValuePair<string, object?>[] TypeTags =
        Enumerable.Range(0, CmdBlockStatus + 1).Select(c => new KeyValuePair<string, object?>("type", CommandName((ushort)c).ToLowerInvariant())).ToArray();

    public static void Register(NbdServer server)
    {
        lock (Servers) Servers.Add(server);
    }

    public static void Unregister(NbdServer server)
    {
        lock (Servers) Servers.Remove(server);
    }

    private static int ObserveMappingQueues()
    {
        int depth = 0;
        lock (Servers)
            foreach (var s in Servers) depth += s.FileSystem.PendingMappings;
        return depth;
    }

    /// <summary>A request was answered at <paramref name="done"/> (a Stopwatch timestamp).</summary>
    public static void Answered(ushort type, uint length, bool failed, long received, long done)
    {
        var tag = TypeTags[type];
        Requests.Add(1, tag);
        if (!failed && type == CmdRead) BytesRead.Add(length);
        else if (!failed && type == CmdWrite) BytesWritten.Add(length);
        if (Latency.Enabled) Instruments.Record(Latency, Instruments.Milliseconds(received, done), tag);
    }
}
