// holdfast/react in a real browser: the React fixture app (www/fixtures/react, rendered
// in StrictMode, bundled by `npm run build`) against the real server.
import { wrapperTests } from '../fixtures/scenarios';

wrapperTests({ name: 'react', path: '/fixtures/react/index.html', connectsOnMount: 2 });
