// holdfast/vue in a real browser: the Vue fixture app (www/fixtures/vue, bundled by
// `npm run build`) against the real server.
import { wrapperTests } from '../fixtures/scenarios';

wrapperTests({ name: 'vue', path: '/fixtures/vue/index.html', connectsOnMount: 1 });
