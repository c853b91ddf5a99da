using System.Diagnostics;

namespace Cowfish.Cli;

/// <summary>
/// A one-line progress bar on stderr (percent, bytes, rate), redrawn in place with '\r' at most ten
/// times a second and erased by <see cref="Done"/>. Silent unless stderr is a terminal
/// (<see cref="Io.ShowProgress"/>), so that redirected output and logs stay clean.
/// </summary>
internal sealed class Progress
{
    private const int BarWidth = 24;
    private readonly TextWriter? _err;
    private readonly string _label;
    private readonly long _total;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private long _lastDrawMs = long.MinValue / 2;
    private int _drawn;

    public Progress(Io io, string label, long total)
    {
        _err = io.ShowProgress ? io.Err : null;
        _label = label;
        _total = total;
    }

    /// <summary>Reports that the first <paramref name="done"/> bytes of the total have been dealt with.</summary>
    public void Report(long done)
    {
        if (_err is null) return;
        long now = _clock.ElapsedMilliseconds;
        if (now - _lastDrawMs < 100) return;
        _lastDrawMs = now;
        double fraction = _total <= 0 ? 1 : Math.Clamp((double)done / _total, 0, 1);
        int filled = (int)(fraction * BarWidth);
        double mbps = done / 1e6 / Math.Max(_clock.Elapsed.TotalSeconds, 1e-3);
        // A total of 0 or less means "unknown" (a stream read from a pipe): bytes and rate only.
        string line = _total <= 0
            ? $"{_label} {Cli.FormatBytes((ulong)Math.Max(done, 0))}  {mbps:0.0} MB/s"
            : $"{_label} [{new string('#', filled)}{new string('.', BarWidth - filled)}] {fraction * 100,5:0.0}%  "
              + $"{Cli.FormatBytes((ulong)Math.Max(done, 0))} / {Cli.FormatBytes((ulong)Math.Max(_total, 0))}  {mbps:0.0} MB/s";
        _err.Write("\r" + line.PadRight(_drawn));
        _drawn = line.Length;
        _err.Flush();
    }

    /// <summary>Erases the bar so that whatever is printed next starts on a clean line.</summary>
    public void Done()
    {
        if (_err is null || _drawn == 0) return;
        _err.Write("\r" + new string(' ', _drawn) + "\r");
        _err.Flush();
        _drawn = 0;
    }
}
