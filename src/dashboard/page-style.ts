/**
 * The dashboard's style sheet: system fonts only, and holder colours (set by the script) that
 * each carry a letter too, so no one needs to tell colours apart to read the grid.
 */
export const PAGE_STYLE = `
:root { color-scheme: light; --ink: #1b1b1b; --muted: #595959; --line: #d0d0d0; --paper: #ffffff; --wash: #f4f4f4; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 76rem; padding: 1rem 1.25rem 2rem; color: var(--ink); background: var(--paper);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; }
header { display: flex; align-items: baseline; justify-content: space-between; gap: 1rem; flex-wrap: wrap; border-bottom: 1px solid var(--line); }
h1 { font-size: 1.35rem; margin: .25rem 0 .5rem; }
h2 { font-size: 1.05rem; margin: 1.25rem 0 .5rem; }
.muted { color: var(--muted); font-weight: normal; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.connection { margin: 0; font-size: .9rem; }
.connection::before { content: "●"; margin-right: .35rem; }
.connection[data-state="live"]::before { color: #007a3d; }
.connection[data-state="connecting"]::before, .connection[data-state="reconnecting"]::before { color: #a35a00; }
.banner { margin: 1rem 0 0; padding: .5rem .75rem; border-radius: 4px; border-left: 4px solid; }
.banner.error { background: #fdecea; border-color: #b3261e; }
.banner.grace { background: #fff4d6; border-color: #a35a00; }
.plan { display: grid; grid-template-columns: repeat(auto-fill, minmax(10rem, 1fr)); gap: .25rem 1rem; margin: 0; }
.plan div { padding: .25rem 0; border-bottom: 1px solid var(--wash); }
.plan dt { font-size: .8rem; color: var(--muted); }
.plan dd { margin: 0; font-variant-numeric: tabular-nums; }
.legend { margin: -.25rem 0 .5rem; font-size: .8rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(6.5rem, 1fr)); gap: .4rem; }
.cell { position: relative; min-height: 4.1rem; padding: .3rem .45rem; border-radius: 6px; border: 1px solid rgba(0,0,0,.25);
  font-size: .8rem; font-variant-numeric: tabular-nums; transition: background-color .3s; }
.cell .index { font-weight: 600; }
.cell .key { position: absolute; top: .2rem; right: .45rem; font-size: 1.15rem; font-weight: 700; }
.cell .pool { display: inline-block; margin-left: .3rem; padding: 0 .3rem; border-radius: 3px; background: rgba(255,255,255,.8); color: #1b1b1b; font-size: .7rem; }
.cell .left { display: block; margin-top: .35rem; }
.cell.free { background: var(--paper); border-style: dashed; border-color: #767676; color: var(--muted); }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { font-size: .8rem; color: var(--muted); font-weight: 600; }
th.num { text-align: right; }
tbody tr:nth-child(even) { background: var(--wash); }
td.holder { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .85rem; word-break: break-all; }
td.partitions { color: var(--muted); font-size: .8rem; }
.swatch { display: inline-block; min-width: 1.6rem; padding: 0 .3rem; border-radius: 4px; text-align: center; font-weight: 700; border: 1px solid rgba(0,0,0,.25); }
.changes { list-style: none; margin: 0; padding: 0; max-height: 16rem; overflow-y: auto; border: 1px solid var(--line); border-radius: 4px; font-size: .85rem; }
.changes li { padding: .2rem .6rem; border-bottom: 1px solid var(--wash); }
.changes li.new { background: #e8f1fb; }
.changes time { color: var(--muted); font-variant-numeric: tabular-nums; margin-right: .6rem; }
.changes li[data-kind="grace-started"], .changes li[data-kind="grace-ended"], .changes li[data-kind="epoch"] { font-weight: 600; }
.changes li[data-kind="backend-failing"] { color: #b3261e; }
footer { margin-top: 1.5rem; font-size: .8rem; }
`;
