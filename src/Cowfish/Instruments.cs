using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Diagnostics.Metrics;

namespace Cowfish;

/// <summary>
/// The engine's counters and histograms, on the meter <c>Cowfish</c> (System.Diagnostics.Metrics),
/// for dotnet-counters, OpenTelemetry or a <see cref="MeterListener"/>. With nobody listening a
/// call costs a field test; listening or not, none allocates. <c>docs/nbd.md</c> lists them.
/// </summary>
internal static class Instruments
{
    public const string MeterName = "Cowfish";

    /// <summary>The one meter of the process; front ends create their instruments on it too.</summary>
    public static readonly Meter Meter = new(MeterName);

    private static readonly Counter<long> Commits =
        Meter.CreateCounter<long>("cowfish.commits", "{commit}", "Write transactions committed");

    private static readonly Histogram<double> CommitTime =
        Meter.CreateHistogram<double>("cowfish.commit.duration", "ms", "Time to commit a write transaction, not counting the wait for durability");

    private static readonly Counter<long> Flushes =
        Meter.CreateCounter<long>("cowfish.flushes", "{flush}", "Durable flushes (fdatasync, superblock, fdatasync), each covering every commit staged before it");

    private static readonly Histogram<double> FlushTime =
        Meter.CreateHistogram<double>("cowfish.flush.duration", "ms", "Time of one durable flush");

    private static readonly Counter<long> NodeCacheHits =
        Meter.CreateCounter<long>("cowfish.node_cache.hits", "{node}", "Tree node reads answered by the node cache");

    private static readonly Counter<long> NodeCacheMisses =
        Meter.CreateCounter<long>("cowfish.node_cache.misses", "{node}", "Tree node reads that went to the device");

    // Serialises histogram recordings. dotnet-counters' aggregation makes an aggregator per thread
    // that races to see a tag set first, and each counts against its limit of 10 histograms: 32
    // workers answering their first requests together would use the limit up and hide the rest.
    // Its aggregators lock on every update anyway, so taking turns here costs next to nothing.
    private static readonly object HistogramGate = new();

    /// <summary>Records a histogram value if anyone listens (one gate for all: see <see cref="HistogramGate"/>).</summary>
    public static void Record(Histogram<double> histogram, double value, KeyValuePair<string, object?> tag = default)
    {
        if (!histogram.Enabled) return;
        lock (HistogramGate)
        {
            if (tag.Key is null) histogram.Record(value);
            else histogram.Record(value, tag);
        }
    }

    /// <summary>A commit that began at <paramref name="started"/> (a Stopwatch timestamp) is staged.</summary>
    public static void Committed(long started)
    {
        Commits.Add(1);
        if (CommitTime.Enabled) Record(CommitTime, Milliseconds(started, Stopwatch.GetTimestamp()));
    }

    /// <summary>A durable flush that began at <paramref name="started"/> is done.</summary>
    public static void Flushed(long started)
    {
        Flushes.Add(1);
        if (FlushTime.Enabled) Record(FlushTime, Milliseconds(started, Stopwatch.GetTimestamp()));
    }

    /// <summary>
    /// Looks <paramref name="key"/> up in the node cache <paramref name="cache"/> and counts a hit or
    /// a miss. The lookup is done here so that the node store changes by one line.
    /// </summary>
    public static bool NodeCacheLookup<TKey, TValue>(ConcurrentDictionary<TKey, TValue> cache, TKey key, [MaybeNullWhen(false)] out TValue value)
        where TKey : notnull
    {
        bool hit = cache.TryGetValue(key, out value);
        (hit ? NodeCacheHits : NodeCacheMisses).Add(1);
        return hit;
    }

    /// <summary>Milliseconds between two Stopwatch timestamps.</summary>
    public static double Milliseconds(long from, long to) => (to - from) * 1000.0 / Stopwatch.Frequency;
}
